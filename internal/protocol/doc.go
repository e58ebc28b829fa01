// Package protocol implements the subset of the Centrifugo client protocol v2
// (JSON) that Herald relays speak: command decoding (several commands per
// frame separated by "\n"; the empty command {} is a ping/pong) and appending
// encoders for replies, pushes, errors and disconnects.
//
// Encoders append to a caller-owned buffer and never allocate on their own,
// so a relay encodes a publication push once and shares the bytes with every
// subscriber. Raw JSON payloads (data, info) are copied without newlines,
// because "\n" separates messages inside one transport frame.
//
// Everything here is stateless and safe for concurrent use.
package protocol
