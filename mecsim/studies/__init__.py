"""Studies that are not sweeps of the delay models (`mecsim sweep`): each a module with a ``run``."""
