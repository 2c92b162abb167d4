# The hub. (The thopter image, which runs inside each Fly machine, lives in thopter/.)
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tmux procps ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY src ./src
COPY prompts ./prompts
COPY tsconfig.json ./
ENV HUB_HOST=0.0.0.0 DATA_DIR=/data
VOLUME /data
EXPOSE 8080
CMD ["node", "--import", "tsx", "src/main.ts"]
