#!/bin/sh
# Starts RabbitMQ with the loyalty broker users, queues and permissions, imported at boot
# from a definitions file written here (RabbitMQ's `load_definitions`): users and
# permissions from docker/rabbitmq/permissions, plus an administrator for the management
# UI. Passwords come from the environment: RABBITMQ_WORKER_PASSWORD,
# RABBITMQ_PRODUCER_PASSWORD, RABBITMQ_STAFF_PASSWORD, RABBITMQ_ADMIN_PASSWORD. Their
# default, "loyalty-dev-password", is for local development only. A password goes into
# broker URLs too, so keep it URL-safe (letters, digits, - . _ ~).
#
# The exchanges, queues and bindings are declared here, as the worker declares them
# (durable classic queues, direct exchanges named after them), so that a producer, which
# may not declare anything, can publish before the first worker has started.
set -eu
perms=${LOYALTY_RABBITMQ_PERMISSIONS:-/etc/loyalty/rabbitmq/permissions}
out=${LOYALTY_RABBITMQ_DEFINITIONS:-/tmp/loyalty-definitions.json}
vhost=${LOYALTY_RABBITMQ_VHOST:-/}
umask 077

password_of() {  # role -> its password from RABBITMQ_<ROLE>_PASSWORD, checked URL-safe
    eval "value=\${RABBITMQ_$1_PASSWORD:-loyalty-dev-password}"
    case $value in
        *[!A-Za-z0-9._~-]*|'') echo "error: RABBITMQ_$1_PASSWORD must be URL-safe and not empty" >&2
                               exit 1 ;;
    esac
    printf '%s' "$value"
}

users=$(grep -v '^#' "$perms" | awk 'NF == 4')
admin=$(password_of ADMIN)
{
    printf '{"vhosts": [{"name": "%s"}],\n "users": [\n' "$vhost"
    printf '  {"name": "loyalty-admin", "password": "%s", "tags": ["administrator"]}' "$admin"
    echo "$users" | while read -r name configure write read; do
        role=$(echo "${name#loyalty-}" | tr 'a-z' 'A-Z')
        password=$(password_of "$role")
        printf ',\n  {"name": "%s", "password": "%s", "tags": []}' "$name" "$password"
    done
    printf '],\n "permissions": [\n'
    printf '  {"user": "loyalty-admin", "vhost": "%s", "configure": ".*", "write": ".*", "read": ".*"}' "$vhost"
    echo "$users" | sed 's/\\/\\\\/g' | while read -r name configure write read; do
        printf ',\n  {"user": "%s", "vhost": "%s", "configure": "%s", "write": "%s", "read": "%s"}' \
            "$name" "$vhost" "$configure" "$write" "$read"
    done
    printf '],\n "exchanges": [\n'
    sep=""
    for queue in loyalty.events loyalty.admin; do
        printf '%s  {"name": "%s", "vhost": "%s", "type": "direct", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}' "$sep" "$queue" "$vhost"
        sep=",
"
    done
    printf '],\n "queues": [\n'
    sep=""
    for queue in loyalty.events loyalty.admin; do
        printf '%s  {"name": "%s", "vhost": "%s", "durable": true, "auto_delete": false, "arguments": {}}' "$sep" "$queue" "$vhost"
        sep=",
"
    done
    printf '],\n "bindings": [\n'
    sep=""
    for queue in loyalty.events loyalty.admin; do
        printf '%s  {"source": "%s", "vhost": "%s", "destination": "%s", "destination_type": "queue", "routing_key": "%s", "arguments": {}}' "$sep" "$queue" "$vhost" "$queue" "$queue"
        sep=",
"
    done
    printf ']}\n'
} > "$out"

if [ "${1:-}" = "--print" ]; then  # for checking the file: print it and stop
    cat "$out"
    exit 0
fi
if id rabbitmq >/dev/null 2>&1; then
    chown rabbitmq:rabbitmq "$out"
fi
umask 022
echo "load_definitions = $out" > /etc/rabbitmq/conf.d/90-loyalty-definitions.conf
exec docker-entrypoint.sh rabbitmq-server "$@"
