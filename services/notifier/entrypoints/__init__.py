"""Transport: the AMQP consumer, the support RPC and the HTTP routes."""
