"""stream_app: red-envelope events to Marketing Cloud emails and SMS, as a Faust stream."""
