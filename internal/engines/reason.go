package engines

import (
	"context"
	"errors"

	"github.com/moby/moby/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Failure reasons of an engine call (metric label values).
const (
	ReasonNotFound    = "not_found"
	ReasonTimeout     = "timeout"
	ReasonUnreachable = "unreachable"
	ReasonError       = "error"
)

// Reason classifies an error of this package's calls: the engine does not
// know the container, the call timed out, the engine could not be reached
// (no socket, connection refused), or anything else.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotFound):
		return ReasonNotFound
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		return ReasonTimeout
	case client.IsErrConnectionFailed(err) || status.Code(err) == codes.Unavailable:
		return ReasonUnreachable
	}
	return ReasonError
}
