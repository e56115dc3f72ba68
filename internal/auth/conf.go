package auth

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ResponseExpiry bounds how long a responder may answer a request.
const ResponseExpiry = time.Minute

// Permissions converts a user of the table to nats-server permissions.
func (u User) Permissions() *server.Permissions {
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: u.PublishAllow(), Deny: u.Deny},
		Subscribe: &server.SubjectPermission{Allow: u.SubscribeAllow()},
	}
	if u.Respond {
		p.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: ResponseExpiry}
	}
	return p
}

// ServerUsers are the nkey users of an embedded server: every user of
// the table whose public key is in keys (by user name). A user without a
// key cannot connect.
func ServerUsers(users []User, keys map[string]string) []*server.NkeyUser {
	var out []*server.NkeyUser
	for _, u := range users {
		pub, ok := keys[u.Name]
		if !ok {
			continue
		}
		out = append(out, &server.NkeyUser{Nkey: pub, Permissions: u.Permissions()})
	}
	return out
}

// EnvVar is the environment variable holding a user's public nkey in
// deploy/nats/contain.conf (CONTAIN_NKEY_COLLECTOR_NODE_A).
func EnvVar(user string) string {
	return "CONTAIN_NKEY_" + strings.NewReplacer("-", "_").Replace(strings.ToUpper(user))
}

// WriteConf writes the authorization block of a nats-server
// configuration for users: each user an nkey read from $EnvVar(user).
func WriteConf(w io.Writer, users []User) error {
	var b strings.Builder
	b.WriteString("authorization {\n  users: [\n")
	section := ""
	for _, u := range users {
		s := "central stages"
		switch {
		case u.Host != "":
			s = "host " + u.Host
		case People(u.Role) || u.Role == RoleAdmin:
			s = "people and setup"
		}
		if s != section {
			fmt.Fprintf(&b, "    # ---- %s ----\n", s)
			section = s
		}
		fmt.Fprintf(&b, "    {\n      # %s\n      nkey: $%s\n      permissions: {\n", u.Name, EnvVar(u.Name))
		list(&b, "publish", u.PublishAllow(), u.Deny)
		list(&b, "subscribe", u.SubscribeAllow(), nil)
		if u.Respond {
			fmt.Fprintf(&b, "        allow_responses: { max: 1, expires: %q }\n", ResponseExpiry.String())
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func list(b *strings.Builder, name string, allow, deny []string) {
	fmt.Fprintf(b, "        %s: {\n          allow: [\n", name)
	for _, s := range allow {
		fmt.Fprintf(b, "            %q\n", s)
	}
	b.WriteString("          ]\n")
	if len(deny) > 0 {
		b.WriteString("          deny: [\n")
		for _, s := range deny {
			fmt.Fprintf(b, "            %q\n", s)
		}
		b.WriteString("          ]\n")
	}
	b.WriteString("        }\n")
}
