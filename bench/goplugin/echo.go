// The echo interface shared by the host (host.go) and the plugin (plugin.go), and its net/rpc
// client and server, as go-plugin's net/rpc examples write them.
package main

import (
	"net/rpc"

	"github.com/hashicorp/go-plugin"
)

// handshake is what the host puts in the plugin's environment; a binary run without it is
// not a plugin.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "PLUGLET_BENCH_GOPLUGIN",
	MagicCookieValue: "echo",
}

// Echo answers its argument.
type Echo interface {
	Echo(payload []byte) ([]byte, error)
}

// echoClient is the host's side: every call is one net/rpc request over go-plugin's connection.
type echoClient struct{ client *rpc.Client }

func (e *echoClient) Echo(payload []byte) ([]byte, error) {
	var reply []byte
	err := e.client.Call("Plugin.Echo", payload, &reply)
	return reply, err
}

// echoServer is the plugin's side.
type echoServer struct{}

func (echoServer) Echo(payload []byte, reply *[]byte) error {
	*reply = payload
	return nil
}

// echoPlugin tells go-plugin how to serve and dispense Echo over net/rpc.
type echoPlugin struct{}

func (echoPlugin) Server(*plugin.MuxBroker) (interface{}, error) { return echoServer{}, nil }

func (echoPlugin) Client(_ *plugin.MuxBroker, c *rpc.Client) (interface{}, error) {
	return &echoClient{client: c}, nil
}

var plugins = map[string]plugin.Plugin{"echo": echoPlugin{}}
