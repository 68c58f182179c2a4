# The provisioner (scheduled sync) and the event bot. Build context: the repository root.
FROM python:3.11-slim-bookworm

COPY pyproject.toml README.md /opt/civmatrix/
COPY provisioner /opt/civmatrix/provisioner
COPY bridge /opt/civmatrix/bridge
RUN pip install --no-cache-dir /opt/civmatrix \
    && useradd --system --uid 10001 --home-dir /var/lib/civmatrix civmatrix \
    && install -d -o civmatrix -g civmatrix /var/lib/civmatrix/state /var/lib/civmatrix/bot

USER civmatrix
WORKDIR /var/lib/civmatrix
