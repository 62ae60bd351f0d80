# syntax=docker/dockerfile:1
# Chipmunk: build with the dev toolchain, run on a slim Node with production dependencies only.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts off for the install (prepare would build before the sources are here), then the native
# modules' own install steps (better-sqlite3's prebuilt binary) with npm rebuild.
RUN npm ci --no-audit --no-fund --ignore-scripts && npm rebuild
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
# The data directory belongs to the unprivileged "node" user of the base image; files it writes are
# world-readable (umask 022), so nginx can serve the media from the same volume mounted read-only.
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# 8080: the public API, tus and /f/. 8081: /internal/auth for nginx only (never publish it).
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "bin/chipmunk.js", "start"]
