"""Broken and hostile inputs, interruptions and races never leave half-written files.

Each bad-input class here is a row of docs/reliability.md.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from i3d_convert import I3DConvertError, InceptionI3d, load_state_dict_file
from i3d_convert.io.atomic import TMP_SUFFIX
from i3d_convert.weights.synthetic import synthetic_tf_arrays
from i3d_convert.io.bundle_writer import write_checkpoint

from conftest import REPO_ROOT


def _stray_temporaries(out: Path) -> list:
    return list(out.parent.glob(f".{out.name}.*{TMP_SUFFIX}"))


# ------------------------------------------------------------ interruptions

_SLOW_CONVERSION = textwrap.dedent(
    """
    import sys, time
    import i3d_convert
    convert_module = sys.modules["i3d_convert.conversion.tf_to_torch"]  # the attribute i3d_convert.conversion.tf_to_torch is the function
    original = convert_module.write_safetensors
    def slow_save(*args, **kwargs):
        original(*args, **kwargs)          # the temporary file is complete on disk ...
        print("WRITTEN", flush=True)
        time.sleep(60)                     # ... and we are interrupted before the rename
    convert_module.write_safetensors = slow_save
    from i3d_convert.cli.app import main
    main(["tf-to-torch", sys.argv[1], "-o", sys.argv[2]])
    """
)


def _start_slow_conversion(checkpoint: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CONVERSION, str(checkpoint), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    line = proc.stdout.readline()
    assert line.strip() == "WRITTEN", (line, proc.stderr.read() if proc.poll() is not None else "")
    assert _stray_temporaries(out), "the conversion should be mid-write now"
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_conversion_leaves_no_output_and_no_temporary(signum, synthetic_checkpoint, tmp_path):
    out = tmp_path / "out.safetensors"
    proc = _start_slow_conversion(synthetic_checkpoint("rgb_imagenet"), out)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == 128 + signum
    stderr = proc.stderr.read()
    assert stderr.strip().splitlines() == ["i3d-convert: interrupted; nothing written"], stderr
    assert not out.exists()
    assert _stray_temporaries(out) == []


def test_after_sigkill_the_next_run_removes_the_stray_temporary(synthetic_checkpoint, tmp_path, cli):
    out = tmp_path / "out.safetensors"
    proc = _start_slow_conversion(synthetic_checkpoint("rgb_imagenet"), out)
    proc.kill()
    proc.wait(timeout=60)
    assert not out.exists()
    assert len(_stray_temporaries(out)) == 1  # SIGKILL cannot be caught: the temporary stays ...
    code, _, stderr = cli("tf-to-torch", synthetic_checkpoint("rgb_imagenet"), "-o", out, "-q")
    assert code == 0, stderr
    assert _stray_temporaries(out) == []  # ... until the next run for that output
    InceptionI3d().load_state_dict(load_state_dict_file(out), strict=True)


def test_two_conversions_racing_for_one_path_leave_one_complete_file(synthetic_checkpoint, tmp_path):
    out = tmp_path / "raced.safetensors"
    sources = [synthetic_checkpoint("rgb_imagenet"), synthetic_checkpoint("rgb_scratch")]
    procs = [
        subprocess.Popen([sys.executable, "-m", "i3d_convert.cli.app", "tf-to-torch", str(src), "-o", str(out),
                          "--overwrite", "-q"], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        for src in sources
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    state = load_state_dict_file(out)
    InceptionI3d().load_state_dict(state, strict=True)
    from i3d_convert import convert

    candidates = [convert(src) for src in sources]
    assert any(all(torch.equal(state[k], c[k]) for k in c) for c in candidates), "a mix of two conversions"
    assert _stray_temporaries(out) == []


def test_racing_without_overwrite_one_wins_one_fails_cleanly(synthetic_checkpoint, tmp_path):
    out = tmp_path / "raced.safetensors"
    procs = [
        subprocess.Popen([sys.executable, "-m", "i3d_convert.cli.app", "tf-to-torch",
                          str(synthetic_checkpoint("rgb_imagenet")), "-o", str(out), "-q"],
                         cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    codes = sorted(proc.wait(timeout=300) for proc in procs)
    errors = [proc.stderr.read() for proc in procs]
    assert codes in ([0, 1], [0, 0]), errors  # [0, 0] only if one finished before the other checked
    if codes == [0, 1]:
        assert any("output exists" in e for e in errors), errors
    InceptionI3d().load_state_dict(load_state_dict_file(out), strict=True)
    assert _stray_temporaries(out) == []


# ------------------------------------------------------------ hostile files


def test_non_finite_weights_are_refused_unless_allowed_with_a_warning(tmp_path, cli):
    arrays = dict(synthetic_tf_arrays("rgb_imagenet", seed=3))
    name = "RGB/inception_i3d/Mixed_4d/Branch_0/Conv3d_0a_1x1/batch_norm/moving_variance"
    arrays[name] = arrays[name].copy()
    arrays[name][5] = np.nan
    prefix = tmp_path / "nan" / "model.ckpt"
    prefix.parent.mkdir()
    write_checkpoint(prefix, arrays)
    out = tmp_path / "nan.safetensors"
    code, _, stderr = cli("tf-to-torch", prefix, "-o", out)
    assert code == 1 and len(stderr.strip().splitlines()) == 1
    assert name in stderr and str(prefix) in stderr  # the TF variable that holds the NaN
    assert "--allow-non-finite" in stderr
    assert not out.exists() and _stray_temporaries(out) == []
    code, _, stderr = cli("tf-to-torch", prefix, "-o", out, "--allow-non-finite")
    assert code == 0 and "i3d-convert: warning: " in stderr and "NaN/inf" in stderr
    assert torch.isnan(load_state_dict_file(out)["Mixed_4d.Branch_0.Conv3d_0a_1x1.bn.running_var"]).sum() == 1


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_state_dict_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"Conv3d_1a_7x7.conv.weight": torch.zeros(1), "x": _Payload()}, evil)
    with pytest.raises(I3DConvertError) as info:
        load_state_dict_file(evil)
    assert str(evil) in str(info.value) and "not a readable state_dict" in str(info.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64, b"{\"a\": 1}" + b"\x00" * 16])
def test_corrupt_state_dict_files_raise_the_package_error(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(len(content).to_bytes(8, "little") + content if content else b"")
    with pytest.raises(I3DConvertError) as info:
        load_state_dict_file(path)
    assert str(path) in str(info.value)


def test_state_dict_that_is_not_tensors_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(I3DConvertError, match="not a state_dict of tensors"):
        load_state_dict_file(path)


# ------------------------------------------------------------ downloads


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut_after = None  # serve only this many bytes on the first full request
    requests = []

    def do_GET(self):  # noqa: N802
        start = 0
        header = self.headers.get("Range")
        type(self).requests.append(header)
        body = self.payload
        if header:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        if not header and self.cut_after is not None:
            chunk = chunk[: self.cut_after]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _release_file(server, payload: bytes, sha: str = None):
    import hashlib

    from i3d_convert.weights.releases import ReleaseFile

    sha = sha or hashlib.sha1(b"blob %d\0" % len(payload) + payload).hexdigest()
    return ReleaseFile("model.ckpt.index", f"http://127.0.0.1:{server.server_port}/f", len(payload), sha)


def test_cut_download_resumes_and_is_verified_before_it_is_moved_into_place(loopback_server, tmp_path):
    from i3d_convert.weights.releases import download_file

    payload = np.random.default_rng(1).bytes(300_000)
    _RangeHandler.payload, _RangeHandler.cut_after, _RangeHandler.requests = payload, 100_000, []
    target = tmp_path / "model.ckpt.index"
    item = _release_file(loopback_server, payload)
    with pytest.raises(I3DConvertError, match="does not match the manifest"):
        download_file(item, target)  # the server cut the transfer: size mismatch, partial file removed
    assert not target.exists()
    part = target.with_name(target.name + ".part")
    part.write_bytes(payload[:120_000])  # a partial file from an earlier, interrupted attempt
    _RangeHandler.cut_after = None
    assert download_file(item, target) == target
    assert target.read_bytes() == payload
    assert _RangeHandler.requests[-1] == "bytes=120000-"  # resumed, not restarted
    assert not part.exists()


def test_download_with_wrong_hash_is_removed(loopback_server, tmp_path):
    from i3d_convert.weights.releases import download_file

    payload = b"x" * 1000
    _RangeHandler.payload, _RangeHandler.cut_after = payload, None
    target = tmp_path / "model.ckpt.index"
    with pytest.raises(I3DConvertError, match="does not match the manifest"):
        download_file(_release_file(loopback_server, payload, sha="0" * 40), target)
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_unreachable_download_is_a_one_line_error_and_leaves_no_folder(tmp_path, cli, monkeypatch):
    from i3d_convert.weights import releases

    rel = releases.RELEASES["rgb_imagenet"]
    dead = [releases.ReleaseFile(f.name, "http://127.0.0.1:9/none", f.size, f.git_sha1) for f in rel.files]
    monkeypatch.setitem(releases.RELEASES, "rgb_imagenet", releases.Release(**{**rel.__dict__, "files": tuple(dead)}))
    code, _, stderr = cli("download", "rgb_imagenet", "--dir", tmp_path / "ck", "-q")
    assert code == 1 and len(stderr.strip().splitlines()) == 1 and "download failed" in stderr
    assert not (tmp_path / "ck").exists()
    monkeypatch.setenv(releases.CACHE_ENV, str(tmp_path / "cache"))  # nor the default, <cache>/checkpoints/NAME
    code, _, stderr = cli("download", "rgb_imagenet", "-q")
    assert code == 1
    assert not (tmp_path / "cache" / "checkpoints" / "rgb_imagenet").exists()


# ------------------------------------------------------------ every bad-index class, through the CLI

from i3d_convert.io import protowire as wire  # noqa: E402
from test_tensorbundle import entry_proto, header_proto, with_block_crcs_fixed, write_raw_bundle  # noqa: E402


def _small(tmp: Path) -> Path:
    prefix = tmp / "src" / "model.ckpt"
    prefix.parent.mkdir()
    write_checkpoint(prefix, {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)})
    return prefix


def _mutate_index(tmp: Path, mutate) -> Path:
    prefix = _small(tmp)
    index = Path(f"{prefix}.index")
    index.write_bytes(mutate(index.read_bytes()))
    return prefix


def _raw(tmp: Path, entries, header=b"", data=bytes(8)) -> Path:
    (tmp / "raw").mkdir()
    return write_raw_bundle(tmp / "raw" / "model.ckpt", entries, data, header)


def _duplicate_names(tmp: Path) -> Path:
    (tmp / "dup").mkdir()
    items = [(b"", header_proto()), (b"a", entry_proto(1, (), 0, 4)), (b"b", entry_proto(1, (), 4, 4))]
    table = bytearray(wire.encode_table(items))
    table[table.index(b"b\x08\x01")] = ord("a")
    Path(tmp / "dup" / "model.ckpt.index").write_bytes(with_block_crcs_fixed(bytes(table)))
    return tmp / "dup" / "model.ckpt"


def _compressed(tmp: Path) -> Path:
    (tmp / "snappy").mkdir()
    table = bytearray(wire.encode_table([(b"", header_proto())]))
    table[table.index(b"\x00\x00\x00\x00\x01\x00\x00\x00") + 8] = 1
    Path(tmp / "snappy" / "model.ckpt.index").write_bytes(bytes(table))
    return tmp / "snappy" / "model.ckpt"


def _missing_shard(tmp: Path) -> Path:
    (tmp / "shards").mkdir()
    items = [(b"", header_proto(num_shards=2)), (b"a", entry_proto(1, (), 0, 4) + wire.field_varint(3, 1))]
    Path(tmp / "shards" / "model.ckpt.index").write_bytes(wire.encode_table(items))
    return tmp / "shards" / "model.ckpt"


def _flip_index_byte(raw: bytes) -> bytes:
    out = bytearray(raw)
    out[len(out) // 3] ^= 0x10
    return bytes(out)


#: bad-input class -> (make(tmp) -> checkpoint path, phrase the one-line error must contain).
#: docs/reliability.md lists these rows.
INDEX_CASES = {
    "empty index file": (lambda t: _mutate_index(t, lambda b: b""), "index file is empty"),
    "bad magic number": (lambda t: _mutate_index(t, lambda b: b[:-1] + bytes([b[-1] ^ 1])), "bad table magic number"),
    "truncated index": (lambda t: _mutate_index(t, lambda b: b[:40]), "too short for a table footer"),
    "corrupt index block": (lambda t: _mutate_index(t, _flip_index_byte), "crc"),
    "size does not match shape": (lambda t: _raw(t, [("w", entry_proto(1, (3, 4), 0, 44))], data=bytes(48)),
                                  "size mismatch"),
    "1 TiB tensor claimed": (lambda t: _raw(t, [("huge", entry_proto(1, (1 << 20, 1 << 18), 0, 1 << 40))]),
                             "truncated data file"),
    "unknown dtype": (lambda t: _raw(t, [("w", entry_proto(99, (2,), 0, 8))]), "unknown dtype 99"),
    "big-endian bundle": (lambda t: _raw(t, [("w", entry_proto(1, (2,), 0, 8))], header_proto(endianness=1)),
                          "big-endian"),
    "negative dimension": (lambda t: _raw(t, [("w", wire.field_varint(1, 1) + wire.field_bytes(
        2, wire.field_bytes(2, wire.field_varint(1, -1))))]), "negative"),
    "overlong varint": (lambda t: _raw(t, [("w", entry_proto(1, (2,), 0, 8) + bytes([0x28]) + b"\xff" * 10 + b"\x01")]),
                        "longer than 10 bytes"),
    "duplicate tensor names": (_duplicate_names, "out of order or duplicated"),
    "compressed index block": (_compressed, "compressed (snappy)"),
    "missing data shard": (_missing_shard, "data file not found"),
}


@pytest.mark.parametrize("case", list(INDEX_CASES))
def test_bad_index_gets_one_line_error_exit_1_and_no_output(case, tmp_path, cli):
    make, phrase = INDEX_CASES[case]
    checkpoint = make(tmp_path)
    out = tmp_path / "out.safetensors"
    code, _, stderr = cli("tf-to-torch", checkpoint, "-o", out)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert lines[0].startswith("i3d-convert: error: ") and "Traceback" not in stderr
    assert str(checkpoint.parent) in lines[0]
    assert phrase in lines[0], lines[0]
    assert not out.exists() and _stray_temporaries(out) == []
