#!/bin/sh
# Prints the two users of one host (collector-HOST, responder-HOST) for the
# users list of deploy/nats/contain.conf. HOST is contain's `host:` as a NATS
# subject token (letters, digits, '-', '_'). The public nkeys are read from
# CONTAIN_NKEY_COLLECTOR_<H> and CONTAIN_NKEY_RESPONDER_<H> (H = HOST upper
# case, '-' as '_') in nats-server's environment.
set -eu
host=${1:?usage: host-users.sh HOST}
case $host in
*[!A-Za-z0-9_-]*) echo "host-users.sh: $host is not a plain subject token" >&2; exit 2 ;;
esac
H=$(printf %s "$host" | tr 'a-z-' 'A-Z_')
cat <<CONF
    # ---- host $host ----
    {
      nkey: \$CONTAIN_NKEY_COLLECTOR_$H
      permissions: {
        publish: { allow: ["contain.v1.raw.$host"] }
        subscribe: { allow: ["_INBOX.collector-$host.>"] }
      }
    }
    {
      nkey: \$CONTAIN_NKEY_RESPONDER_$H
      permissions: {
        publish: { allow: [
          "contain.v1.actions.$host",
          "\$JS.API.CONSUMER.CREATE.CONTAIN_ALERTS.responder-$host.contain.v1.alerts.$host",
          "\$JS.API.CONSUMER.INFO.CONTAIN_ALERTS.responder-$host",
          "\$JS.API.CONSUMER.MSG.NEXT.CONTAIN_ALERTS.responder-$host",
          "\$JS.ACK.CONTAIN_ALERTS.responder-$host.>",
          "\$JS.API.CONSUMER.CREATE.CONTAIN_ACTIONS.responder-$host-restore.contain.v1.actions.$host",
          "\$JS.API.CONSUMER.INFO.CONTAIN_ACTIONS.responder-$host-restore",
          "\$JS.API.CONSUMER.MSG.NEXT.CONTAIN_ACTIONS.responder-$host-restore",
          "\$JS.API.CONSUMER.DELETE.CONTAIN_ACTIONS.responder-$host-restore",
        ] }
        subscribe: { allow: ["contain.v1.control.$host.>", "_INBOX.responder-$host.>"] }
        allow_responses: { max: 1, expires: "1m" }
      }
    }
CONF
