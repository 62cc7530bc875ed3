"""Signal processing shared by training and serving: beats, context beats, R-peaks, file formats."""
