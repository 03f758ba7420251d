"""HTTP routers: thin translations between requests and services."""
