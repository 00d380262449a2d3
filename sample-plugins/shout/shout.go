// shout: a sample plugin in Go, built with `go build -buildmode=c-shared`.
//
//	GET  /shout/{word}   "WORD!" (the configured suffix, "!" by default)
//	POST /shout          the request body in upper case
//
// The plugin's logic is here, in Go. The descriptor, plugin_factory and the functions the host
// calls are in plugin.c, a C file of this package: cgo declares Go exports without `const`, so
// they cannot have the header's exact signatures, and plugin.c passes each call on to a Go
// function exported under another name (the `shout*` functions below).
//
// Every exported function recovers from panics: an unrecovered Go panic kills the host.
package main

// #include <stddef.h>
// #include <stdint.h>
import "C"

import (
	"encoding/json"
	"runtime/cgo"
	"strings"
	"unsafe"
)

// Shout is one instance: what `create` made of its configuration.
type Shout struct {
	Suffix string `json:"suffix"`
}

// shoutCreate parses the instance's JSON configuration (`{}` when the entry has no
// [plugin.config]) and stores a handle to the new instance in *instance. On failure it writes
// the reason into error (capacity bytes) and returns its length; 0 means success.
//
//export shoutCreate
func shoutCreate(config *C.char, length C.size_t, instance *C.uintptr_t, reason *C.char, capacity C.size_t) (written C.size_t) {
	defer func() {
		if recovered := recover(); recovered != nil {
			written = fill(reason, capacity, "create panicked")
		}
	}()
	shout := &Shout{Suffix: "!"}
	if err := json.Unmarshal(C.GoBytes(unsafe.Pointer(config), C.int(length)), shout); err != nil {
		return fill(reason, capacity, "invalid configuration: "+err.Error())
	}
	*instance = C.uintptr_t(cgo.NewHandle(shout))
	return 0
}

// shoutDestroy forgets the instance.
//
//export shoutDestroy
func shoutDestroy(instance C.uintptr_t) {
	defer func() { _ = recover() }()
	cgo.Handle(instance).Delete()
}

// shoutWord writes WORD plus the suffix into out (capacity bytes) and returns its length, or
// -1 when it does not fit or Go panicked.
//
//export shoutWord
func shoutWord(instance C.uintptr_t, word *C.char, length C.size_t, out *C.char, capacity C.size_t) (written C.long) {
	defer func() {
		if recover() != nil {
			written = -1
		}
	}()
	shout := cgo.Handle(instance).Value().(*Shout)
	text := strings.ToUpper(C.GoStringN(word, C.int(length))) + shout.Suffix
	if len(text) > int(capacity) {
		return -1
	}
	return C.long(fill(out, capacity, text))
}

// shoutBody upper-cases the body in place (ASCII letters only, so the length never changes);
// returns 0, or -1 if Go panicked.
//
//export shoutBody
func shoutBody(body *C.char, length C.size_t) (failed C.int) {
	defer func() {
		if recover() != nil {
			failed = -1
		}
	}()
	bytes := unsafe.Slice((*byte)(unsafe.Pointer(body)), int(length))
	for i, b := range bytes {
		if 'a' <= b && b <= 'z' {
			bytes[i] = b - 'a' + 'A'
		}
	}
	return 0
}

// fill copies as much of text as fits into buffer (capacity bytes) and returns the length copied.
func fill(buffer *C.char, capacity C.size_t, text string) C.size_t {
	return C.size_t(copy(unsafe.Slice((*byte)(unsafe.Pointer(buffer)), int(capacity)), text))
}

func main() {}
