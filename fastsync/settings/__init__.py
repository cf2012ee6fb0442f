"""Settings: the config file, credentials, flags and environment -> one validated config and options record."""
