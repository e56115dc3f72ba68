package bus

// RequestPerFetch is c fetching with a pull request per fetch (the path
// before design 032), for the benchmarks of package bus_test.
func RequestPerFetch(c ConsumerConfig) ConsumerConfig {
	c.requestPerFetch = true
	return c
}
