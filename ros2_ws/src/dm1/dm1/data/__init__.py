"""Episode data: HDF5 format (``episode``), directory index (``index``), training windows (``dataset``,
torch), synthetic toy data (``synthetic``). Import submodules directly; this package imports nothing heavy."""
