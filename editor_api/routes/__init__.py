"""The editor API's routes: flows and deploys, the running engine, authentication."""
