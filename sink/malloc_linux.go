//go:build linux && cgo

package sink

/*
#include <malloc.h>

static void limitArenas(void) {
#ifdef M_ARENA_MAX
	mallopt(M_ARENA_MAX, 2);
#endif
}
*/
import "C"

// init caps glibc's malloc arenas at two. librdkafka allocates and frees every
// message on several threads (the application's, the broker threads'); glibc gives
// each thread its own arena and keeps freed memory in it, so under load the
// process holds tens of MiB it does not use. Two arenas keep the producer's
// memory close to what its queue limits allow, at no measured cost in
// throughput (make bench). MALLOC_ARENA_MAX in the environment is applied first
// and then overridden; musl has no arenas and skips this.
func init() {
	C.limitArenas()
}
