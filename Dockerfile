# syntax=docker/dockerfile:1
#
# tes-slurm-gateway: one image for every role (`serve`, `api`, `worker`).
#
# What an HPC site mounts into the container that submits jobs (`serve` or `worker`; `api` needs only
# the configuration and Redis):
#   /etc/slurm/slurm.conf   the cluster's slurm.conf, and any file it Includes. The Slurm client here is
#                           Debian 12's (22.05): the site's slurmctld and slurmdbd must still accept
#                           RPCs from that release; if they do not, build from an image with the
#                           site's own Slurm and point `slurm.binDir` at it.
#   /run/munge              the directory holding munged's socket (munge.socket.2), from a host that
#                           runs munged with the cluster's key; or share it with a second container
#                           of this image running munged, as the Helm chart's munge sidecar does.
#   the work root           the shared filesystem, at the very path the compute nodes see it, since job
#                           scripts and sbatch --chdir use absolute paths; the same for every
#                           storage.allowedRoots entry.
#   the image cache         container.imageCacheDir, also on the shared filesystem at the compute
#                           nodes' path: the worker pulls each image there once as a .sif file and
#                           the jobs run that file.
#   Apptainer               the worker pulls with container.executable, the very path the job scripts
#                           run on the compute nodes. Debian 12 has no Apptainer package: mount the
#                           site's install at that path (mksquashfs, which pulls need, is in here).
#   /etc/tes-gateway/gateway.yaml   the configuration (pass `--config` or set TES_GATEWAY_CONFIG).
#
# Jobs run on the cluster as the user this container runs as, and sbatch refuses a uid without a
# passwd entry: build with TESGW_UID/TESGW_GID set to the site's service account (the uid that has a
# Slurm association and owns the work root).

FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:22-bookworm-slim AS runtime
ARG TESGW_UID=10001
ARG TESGW_GID=10001

# slurm-client needs munge for its auth plugin; munged itself runs from this image only as a sidecar
# given the key. squashfs-tools is what `apptainer pull` builds .sif files with. bubblewrap serves
# the bwrap-host runtime (it needs user namespaces, which a container runtime's default seccomp
# profile may refuse). munge's postinst makes a random key: it is removed, because no image should
# carry a key and a stray one would turn a missing mount into puzzling "invalid credential" errors.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurm-client munge squashfs-tools bubblewrap ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/munge/munge.key

# The node user holds uid 1000, which a site's service account may need.
RUN userdel --remove node \
    && (getent group "${TESGW_GID}" >/dev/null || groupadd --gid "${TESGW_GID}" tesgw) \
    && useradd --no-log-init --uid "${TESGW_UID}" --gid "${TESGW_GID}" \
        --home-dir /var/lib/tes-gateway --create-home --shell /usr/sbin/nologin tesgw \
    && mkdir -p /var/lib/tes-gateway/tasks /var/lib/tes-gateway/images /etc/tes-gateway \
    && chown -R "${TESGW_UID}:${TESGW_GID}" /var/lib/tes-gateway

WORKDIR /app
ENV NODE_ENV=production
# Owned by root: the gateway's own user cannot change its code. The app finds spec/, libexec/ and
# ui/ (the dashboard's files) next to package.json at run time.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY spec ./spec
COPY libexec ./libexec
COPY ui ./ui
RUN printf '#!/bin/sh\nexec node /app/dist/src/main.js "$@"\n' > /usr/local/bin/tes-gateway \
    && chmod 0755 /usr/local/bin/tes-gateway libexec/apptainer-bwrap

USER ${TESGW_UID}:${TESGW_GID}
# The gateway listens only on 127.0.0.1 unless told otherwise; in a container it must answer on the
# container's own interface for the published port to reach it. This variable wins over server.host
# in the YAML file: set it to another address to change that.
ENV TES_GATEWAY_HOST=0.0.0.0
# A worker's listener for /healthz, /readyz and /metrics (worker.http), on the same terms: these two
# win over worker.http in the YAML file.
ENV TES_GATEWAY_WORKER_HTTP_HOST=0.0.0.0 TES_GATEWAY_WORKER_HTTP_PORT=9464
EXPOSE 8000 9464

# Liveness, without I/O: /healthz of the API (serve, api) on the port TES_GATEWAY_PORT names (8000
# when the port is set only in the YAML file), or of a worker's listener on the port
# TES_GATEWAY_WORKER_HTTP_PORT names.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "-e", "const a=require('fs').readFileSync('/proc/1/cmdline','utf8').split('\\0');const e=process.env;const port=a.includes('worker')?e.TES_GATEWAY_WORKER_HTTP_PORT||9464:e.TES_GATEWAY_PORT||8000;require('http').get({host:'127.0.0.1',port:Number(port),path:'/healthz',timeout:4000},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1)).on('timeout',()=>process.exit(1))"]

ENTRYPOINT ["node", "/app/dist/src/main.js"]
CMD ["serve"]
