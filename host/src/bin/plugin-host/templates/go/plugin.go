// {{name}}: a plugin for plugin-host in Go, built with `go build -buildmode=c-shared`.
//
//	GET /{{name}}   "hello from {{name}}"
//
// The logic is here, in Go; plugin.c holds the descriptor, plugin_factory and the functions the
// host calls, each passing its call on to a Go function exported below. (cgo declares Go
// exports without `const`, so they cannot have the header's exact signatures.)
//
// Every exported function must recover() from panics: an unrecovered Go panic kills the host.
package main

// #include <stddef.h>
import "C"

import "unsafe"

// goHello writes the response body into out (capacity bytes) and returns its length, or -1
// when it does not fit or Go panicked.
//
//export goHello
func goHello(out *C.char, capacity C.size_t) (written C.long) {
	defer func() {
		if recover() != nil {
			written = -1
		}
	}()
	text := "hello from {{name}}\n"
	if len(text) > int(capacity) {
		return -1
	}
	return C.long(copy(unsafe.Slice((*byte)(unsafe.Pointer(out)), int(capacity)), text))
}

func main() {}
