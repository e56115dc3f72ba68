package bus_test

import (
	"net/netip"

	"github.com/nats-io/nats.go"
)

type netAddrPort = netip.AddrPort

func natsUser(u, p string) nats.Option { return nats.UserInfo(u, p) }
