"""RabbitMQ on aio-pika: connections, topology, confirmed publishing, consumers, RPC."""
