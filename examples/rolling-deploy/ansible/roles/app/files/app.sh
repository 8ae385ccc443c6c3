#!/bin/sh
# The application (a stand-in for the real build): answers /health on $APP_PORT.
set -e
. "$(dirname "$0")/app.env"
mkdir -p /tmp/app-www && echo "ok $APP_VERSION" > /tmp/app-www/health
exec python3 -m http.server --directory /tmp/app-www "$APP_PORT"
