"""Directory → Matrix sync: read LDAP/AD, plan users, spaces and size-capped rooms, apply them to Synapse."""
