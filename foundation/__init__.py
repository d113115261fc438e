"""What every Gatehouse app uses and no app owns: errors and problem+json, the JSON body parser,
fast JSON, the payload value check, config-file loading, a TTL cache, the outbound webhook sender
and the read-only admin base. It imports no app (only Django, config and telemetry)."""
