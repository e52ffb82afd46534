"""mecsim: collaborative mobile edge computing simulator for AIGC services."""
__version__ = "0.1.0"
