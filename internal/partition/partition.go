// Package partition maps a channel to its Kafka partition exactly like
// Kafka's default partitioner (murmur2 of the key, positive, modulo the
// partition count). Relays use it both to produce (manual partitioning) and
// to route Recover to the controller that owns the channel's partition, so
// the two can never disagree.
package partition

// For returns the partition of channel among n partitions.
func For(channel string, n int32) int32 {
	if n <= 0 {
		return 0
	}
	return int32((murmur2(channel) & 0x7fffffff) % uint32(n))
}

// murmur2 is Kafka's murmur2 with seed 0x9747b28c, over the string's bytes
// without converting it to a []byte (no allocation).
func murmur2(s string) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(s)
	h := uint32(seed) ^ uint32(n)
	i := 0
	for ; n-i >= 4; i += 4 {
		k := uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch n - i {
	case 3:
		h ^= uint32(s[i+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(s[i+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(s[i])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
