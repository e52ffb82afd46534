"""Built-in scheduler plugins, one module each (registered in setup.cfg under ``mecsim.schedulers``)."""
