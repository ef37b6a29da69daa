#!/bin/sh
# Entry point of the ticketmesh image: the first argument says what this container runs.
#   <service>            one service: python -m services.<service> (the list below)
#   demo                 demo traffic against a running mesh (TM_DEMO_*_HOST say where)
#   ticketmesh <args>    the operations CLI (dead letters, config, reports, ...)
set -eu
SERVICES="intake_email intake_chat intake_phone dispatcher sla_watcher notifier agent_desk"
command="${1:-help}"
for service in $SERVICES; do
    if [ "$command" = "$service" ]; then
        shift
        exec python -m "services.$service" "$@"
    fi
done
case "$command" in
    demo) shift; exec python -m devenv.demo "$@" ;;
    ticketmesh) shift; exec ticketmesh "$@" ;;
    help|-h|--help)
        echo "usage: <service> | demo | ticketmesh <args>"
        echo "services: $SERVICES"
        ;;
    *)
        echo "unknown command '$command'; services: $SERVICES (or demo, ticketmesh)" >&2
        exit 64
        ;;
esac
