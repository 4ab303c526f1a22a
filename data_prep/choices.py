"""The choices ``orch prep`` offers, in a module that imports nothing: the CLI lists them in its help without
loading pandas or h5py."""

NUMERIC_FILLS = ("median", "mean")  # imputation of numeric metadata columns (data_prep.metadata)
COMPRESSIONS = ("lzf", "gzip")  # built-in h5py filters only: the GPU machine has no hdf5plugin (data_prep.shards)
