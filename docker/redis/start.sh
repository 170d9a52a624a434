#!/bin/sh
# Starts Redis with the loyalty broker users (docker/redis/users.acl-rules) and the
# passwordless `default` user turned off. Passwords come from the environment:
# REDIS_WORKER_PASSWORD, REDIS_PRODUCER_PASSWORD, REDIS_STAFF_PASSWORD. Their default,
# "loyalty-dev-password", is for local development only. A password goes into broker
# URLs too, so keep it URL-safe (letters, digits, - . _ ~). Extra arguments go to redis-server.
set -eu
rules=${LOYALTY_REDIS_RULES:-/etc/loyalty/redis/users.acl-rules}
acl=${LOYALTY_REDIS_ACL_FILE:-/tmp/loyalty-users.acl}
umask 077
echo "user default off" > "$acl"
grep -v '^#' "$rules" | while read -r name rules_of_user; do
    [ -n "$name" ] || continue
    role=$(echo "${name#loyalty-}" | tr 'a-z' 'A-Z')
    eval "password=\${REDIS_${role}_PASSWORD:-loyalty-dev-password}"
    case $password in
        *[!A-Za-z0-9._~-]*|'') echo "error: REDIS_${role}_PASSWORD must be URL-safe and not empty" >&2; exit 1 ;;
    esac
    echo "user $name on >$password $rules_of_user" >> "$acl"
done
if id redis >/dev/null 2>&1; then
    chown redis "$acl"  # the image's entrypoint runs redis-server as the redis user
fi
set -- redis-server --appendonly yes --appendfsync everysec --aclfile "$acl" "$@"
if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    exec docker-entrypoint.sh "$@"
fi
exec "$@"
