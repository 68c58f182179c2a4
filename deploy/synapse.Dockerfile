# Synapse with civmatrix importable: the main process's listeners mount civmatrix's admin refuser
# (provisioner.synapse.refuser.admin_api_refuser) and client-API token guard (provisioner.synapse.guard),
# every worker loads the same two through provisioner.synapse.guard.WorkerGuard, and every Synapse process
# loads the LDAP login module (provisioner.synapse.auth.DirectoryAuthProvider). Build context: the repository
# root.
ARG SYNAPSE_VERSION=v1.163.2
FROM ghcr.io/element-hq/synapse:${SYNAPSE_VERSION}

COPY pyproject.toml README.md /opt/civmatrix/
COPY provisioner /opt/civmatrix/provisioner
COPY bridge /opt/civmatrix/bridge
# --no-deps: Synapse's own pinned dependencies stay exactly as released. What Synapse imports from
# civmatrix needs only PyYAML (already in Synapse) and ldap3.
RUN pip install --no-cache-dir --no-deps /opt/civmatrix \
    && pip install --no-cache-dir "ldap3>=2.9" \
    && install -d -o 991 -g 991 /var/lib/synapse/media_store
# Media live in /var/lib/synapse, not in the base image's /data: that is a declared VOLUME, and a derived
# image cannot change what is inside it. A named volume mounted here is seeded from the image, so it starts
# owned by uid 991, the user the image's start.py runs Synapse as.
