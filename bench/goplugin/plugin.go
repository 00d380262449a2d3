package main

import "github.com/hashicorp/go-plugin"

// servePlugin is the plugin's main: go-plugin prints the handshake line on stdout and serves
// net/rpc on a Unix socket until the host kills it.
func servePlugin() {
	plugin.Serve(&plugin.ServeConfig{HandshakeConfig: handshake, Plugins: plugins})
}
