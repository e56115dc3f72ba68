package bus

// RequestPerFetch is c fetching with a pull request per fetch (the path
// before design 032), for the benchmarks of package bus_test.
func RequestPerFetch(c ConsumerConfig) ConsumerConfig {
	c.requestPerFetch = true
	return c
}

// WithRelayRoom is c with a relay whose PubAck channel holds n (tests).
func WithRelayRoom(c ConsumerConfig, n int) ConsumerConfig {
	c.relayRoom = n
	return c
}
