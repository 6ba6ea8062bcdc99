"""What the service promises the outside world: topic names, record shapes, schemas. No I/O."""
