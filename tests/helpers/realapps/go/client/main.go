// The real-clients matrix driven by Go's net/http client: `client h1|h2c BASE_URL SIZE`, the steps of
// client.js on one connection (h2c: golang.org/x/net's HTTP/2 transport over cleartext, prior knowledge).
// Prints one JSON object of what came back.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

type result struct {
	Status int    `json:"status"`
	Length int    `json:"length"`
	Sha256 string `json:"sha256"`
	Text   string `json:"text"`
}

func pattern(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(i % 251)
	}
	return out
}

func main() {
	mode, base := os.Args[1], os.Args[2]
	size, _ := strconv.Atoi(os.Args[3])
	var transport http.RoundTripper = &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	if mode == "h2c" {
		transport = &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	send := func(method, path string, body []byte) result {
		var reader io.Reader
		if body != nil {
			reader = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, reader)
		if err != nil {
			panic(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, method, path, err)
			os.Exit(1)
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, method, path, "body:", err)
			os.Exit(1)
		}
		sum := sha256.Sum256(data)
		text := ""
		if len(data) <= 200 {
			text = string(data)
		}
		return result{resp.StatusCode, len(data), hex.EncodeToString(sum[:]), text}
	}
	out := map[string]result{}
	out["small"] = send("GET", "/small", nil)
	out["upload"] = send("POST", "/upload", pattern(size))
	out["download"] = send("GET", "/download?n="+strconv.Itoa(size), nil)
	out["error"] = send("GET", "/missing", nil)
	out["after"] = send("GET", "/small", nil)
	enc, _ := json.Marshal(out)
	fmt.Println(string(enc))
}
