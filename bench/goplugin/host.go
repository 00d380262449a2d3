// A hashicorp go-plugin echo pair, the reference for pluglet's isolated round trip
// (bench/compare.sh builds and runs it). One binary plays both parts: run by hand it is the
// host, which starts itself as the plugin (go-plugin's magic cookie in the environment
// selects that part), over net/rpc, go-plugin's default protocol.
//
// The host measures, and prints as one line of `name=value` fields:
//   - startup (unless -starts 0): from plugin.NewClient to a dispensed Echo (process start,
//     handshake, connection, dispense), the median of -starts runs, in ms;
//   - round trip (unless -seconds 0): a 64-byte Echo call, timed one by one for -seconds after
//     -warmup seconds of calls: p50, p99 and mean in µs, and the number of calls.
//
// Build (offline, from Debian's golang-github-hashicorp-go-plugin-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o goplugin-echo ./bench/goplugin
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

func main() {
	if os.Getenv(handshake.MagicCookieKey) == handshake.MagicCookieValue {
		servePlugin()
		return
	}
	seconds := flag.Float64("seconds", 3, "how long to time round trips, in seconds")
	warmup := flag.Float64("warmup", 1, "how long to make round trips before timing them, in seconds")
	starts := flag.Int("starts", 5, "startups to time")
	flag.Parse()
	if err := run(*starts, duration(*warmup), duration(*seconds)); err != nil {
		fmt.Fprintln(os.Stderr, "goplugin-echo:", err)
		os.Exit(1)
	}
}

func duration(seconds float64) time.Duration {
	return time.Duration(seconds * float64(time.Second))
}

// start starts the plugin and dispenses its Echo.
func start(self string) (*plugin.Client, Echo, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugins,
		Cmd:              exec.Command(self),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolNetRPC},
		Logger:           hclog.NewNullLogger(),
	})
	protocol, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	raw, err := protocol.Dispense("echo")
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	return client, raw.(Echo), nil
}

func run(starts int, warmup, duration time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var fields []string
	if starts > 0 {
		startups := make([]time.Duration, 0, starts)
		for i := 0; i < starts; i++ {
			began := time.Now()
			client, _, err := start(self)
			if err != nil {
				return err
			}
			startups = append(startups, time.Since(began))
			client.Kill()
		}
		fields = append(fields, fmt.Sprintf("startup_ms=%.3f", ms(quantile(startups, 0.5))))
	}
	if duration > 0 {
		times, err := roundTrips(self, warmup, duration)
		if err != nil {
			return err
		}
		var total time.Duration
		for _, t := range times {
			total += t
		}
		fields = append(fields, fmt.Sprintf("p50_us=%.2f p99_us=%.2f mean_us=%.2f calls=%d",
			ms(quantile(times, 0.5))*1e3, ms(quantile(times, 0.99))*1e3,
			ms(total/time.Duration(len(times)))*1e3, len(times)))
	}
	fmt.Println(strings.Join(fields, " "))
	return nil
}

// roundTrips starts the plugin, makes Echo calls for warmup, then times each call for duration.
func roundTrips(self string, warmup, duration time.Duration) ([]time.Duration, error) {
	client, echo, err := start(self)
	if err != nil {
		return nil, err
	}
	defer client.Kill()
	payload := bytes.Repeat([]byte{7}, 64)
	call := func() error {
		reply, err := echo.Echo(payload)
		if err == nil && !bytes.Equal(reply, payload) {
			err = fmt.Errorf("echo answered %d bytes that differ from the 64 sent", len(reply))
		}
		return err
	}
	for began := time.Now(); time.Since(began) < warmup; {
		if err := call(); err != nil {
			return nil, err
		}
	}
	var times []time.Duration
	for began := time.Now(); time.Since(began) < duration; {
		t := time.Now()
		if err := call(); err != nil {
			return nil, err
		}
		times = append(times, time.Since(t))
	}
	return times, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// quantile returns the q-quantile of times (nearest rank), sorting them.
func quantile(times []time.Duration, q float64) time.Duration {
	if len(times) == 0 {
		return 0
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	i := int(q*float64(len(times))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(times) {
		i = len(times) - 1
	}
	return times[i]
}
