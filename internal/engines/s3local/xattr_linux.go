package s3local

import (
	"os"
	"syscall"
)

// xattrSupported reports whether dir's filesystem stores user xattrs.
func xattrSupported(dir string) bool {
	f, err := os.CreateTemp(dir, ".xattr-probe-*")
	if err != nil {
		return false
	}
	name := f.Name()
	_ = f.Close()
	defer os.Remove(name)
	return syscall.Setxattr(name, "user.herald.probe", []byte("1"), 0) == nil
}
