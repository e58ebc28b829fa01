//go:build !linux

package s3local

// xattrSupported assumes no user xattrs off Linux: metadata goes to a
// sidecar directory.
func xattrSupported(string) bool { return false }
