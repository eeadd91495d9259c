"""openmailserver: a self-hosted mail server appliance for people and agents."""

__version__ = "0.1.0"
