"""TV-L1 optical flow, as DeepMind's I3D flow stream was trained on it."""
