# Chipmunk: build with the dev toolchain, run on a slim Node with production dependencies only.
# Plain Dockerfile syntax (no `# syntax=` line), so the classic builder and BuildKit both build it
# without fetching a frontend. `npm run test:docker` builds it and runs docker-compose.yml end to end.

FROM node:20-bookworm-slim AS build
# Debian packages for this stage only, none by default. better-sqlite3 downloads its prebuilt binary
# from GitHub at install time; where that download is impossible it compiles from source, which needs
# --build-arg BUILD_PACKAGES="python3 make g++" (the Docker check builds that way). The runtime
# stage below never has them.
ARG BUILD_PACKAGES=""
RUN if [ -n "$BUILD_PACKAGES" ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $BUILD_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# package-lock.json is written by npm 11, and the npm 10 of the Node 20 image refuses it in `npm ci`
# (the two resolve vite's optional esbuild peer differently), so the build uses npm 11.
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
RUN npm install -g --no-audit --no-fund --loglevel=error npm@11.19.1
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts off for the install (prepare would build before the sources are here), then the native
# modules' own install steps (better-sqlite3's prebuilt binary) with npm rebuild. A module compiled
# from source uses the Node headers the base image ships (nodedir), not a download from nodejs.org.
RUN npm ci --no-audit --no-fund --ignore-scripts && npm_config_nodedir=/usr/local npm rebuild
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY drizzle ./drizzle
COPY bin ./bin
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    PORT=8080 \
    HOST=0.0.0.0 \
    CHIPMUNK_DATA_DIR=/data \
    CHIPMUNK_INTERNAL_PORT=8081
WORKDIR /app
# HEIC photos are decoded by Debian's libheif (heif-convert) in a bounded child process.
RUN apt-get update && apt-get install -y --no-install-recommends libheif-examples && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/drizzle ./drizzle
COPY --from=build /app/bin ./bin
# The demo page's files (served only with CHIPMUNK_DEMO=on; production turns the demo off).
COPY --from=build /app/src/demo/public ./src/demo/public
# The data directory belongs to the unprivileged "node" user of the base image; files it writes are
# world-readable (umask 022), so nginx can serve the media from the same volume mounted read-only.
# A named volume mounted on /data starts as a copy of this directory, owner included.
RUN mkdir -p /data && chown node:node /data
# The data directory belongs to the unprivileged "node" user of the base image. Nothing in it is
# world-readable: the media are shared with gid 101 (the official nginx image's "nginx" group), which
# "node" joins, so nginx serves them from the same volume mounted read-only (CHIPMUNK_MEDIA_GROUP).
RUN (getent group 101 >/dev/null || groupadd --gid 101 chipmunk-media) \
  && usermod -aG "$(getent group 101 | cut -d: -f1)" node \
  && mkdir -p /data && chown node:101 /data && chmod 0750 /data
ENV CHIPMUNK_MEDIA_GROUP=101
USER node
VOLUME ["/data"]
# 8080: the public API, tus and /f/. 8081: /internal/auth for nginx only (never publish it).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "bin/chipmunk.js", "start"]
