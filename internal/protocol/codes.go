package protocol

// Error is a client protocol error, sent as {"id":N,"error":{...}}.
type Error struct {
	Code      uint32 `json:"code"`
	Message   string `json:"message"`
	Temporary bool   `json:"temporary,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Client error codes of the Centrifugo protocol.
var (
	ErrInternal              = &Error{Code: 100, Message: "internal server error", Temporary: true}
	ErrUnauthorized          = &Error{Code: 101, Message: "unauthorized"}
	ErrUnknownChannel        = &Error{Code: 102, Message: "unknown channel"}
	ErrPermissionDenied      = &Error{Code: 103, Message: "permission denied"}
	ErrMethodNotFound        = &Error{Code: 104, Message: "method not found"}
	ErrAlreadySubscribed     = &Error{Code: 105, Message: "already subscribed"}
	ErrLimitExceeded         = &Error{Code: 106, Message: "limit exceeded"}
	ErrBadRequest            = &Error{Code: 107, Message: "bad request"}
	ErrNotAvailable          = &Error{Code: 108, Message: "not available"}
	ErrTokenExpired          = &Error{Code: 109, Message: "token expired"}
	ErrExpired               = &Error{Code: 110, Message: "expired"}
	ErrTooManyRequests       = &Error{Code: 111, Message: "too many requests", Temporary: true}
	ErrUnrecoverablePosition = &Error{Code: 112, Message: "unrecoverable position"}
)

// Disconnect is sent as the code and reason of a WebSocket close frame.
// Codes 3000-3499 (and 4000-4499) ask the client to reconnect, 3500+ are
// terminal.
type Disconnect struct {
	Code   uint16
	Reason string
}

// Reconnect reports whether a client should reconnect after d.
func (d Disconnect) Reconnect() bool {
	return d.Code < 3500 || d.Code >= 5000 || (d.Code >= 4000 && d.Code < 4500)
}

// Disconnect codes of the Centrifugo protocol.
var (
	DisconnectConnectionClosed   = Disconnect{3000, "connection closed"}
	DisconnectShutdown           = Disconnect{3001, "shutdown"}
	DisconnectServerError        = Disconnect{3004, "internal server error"}
	DisconnectExpired            = Disconnect{3005, "connection expired"}
	DisconnectSubExpired         = Disconnect{3006, "subscription expired"}
	DisconnectSlow               = Disconnect{3008, "slow"}
	DisconnectWriteError         = Disconnect{3009, "write error"}
	DisconnectInsufficientState  = Disconnect{3010, "insufficient state"}
	DisconnectForceReconnect     = Disconnect{3011, "force reconnect"}
	DisconnectNoPong             = Disconnect{3012, "no pong"}
	DisconnectTooManyRequests    = Disconnect{3013, "too many requests"}
	DisconnectInvalidToken       = Disconnect{3500, "invalid token"}
	DisconnectBadRequest         = Disconnect{3501, "bad request"}
	DisconnectStale              = Disconnect{3502, "stale"}
	DisconnectForceNoReconnect   = Disconnect{3503, "force disconnect"}
	DisconnectConnectionLimit    = Disconnect{3504, "connection limit"}
	DisconnectChannelLimit       = Disconnect{3505, "channel limit"}
	DisconnectInappropriateProto = Disconnect{3506, "inappropriate protocol"}
	DisconnectPermissionDenied   = Disconnect{3507, "permission denied"}
	DisconnectNotAvailable       = Disconnect{3508, "not available"}
	DisconnectTooManyErrors      = Disconnect{3509, "too many errors"}
)
