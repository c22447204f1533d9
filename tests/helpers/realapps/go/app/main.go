// An app for the real-clients matrix on Go's net/http: `app h1|h2c PORT`, with the routes of app.js.
// h2c serves HTTP/2 over cleartext (prior knowledge and the Upgrade) beside HTTP/1.1, from golang.org/x/net.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func pattern(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(i % 251)
	}
	return out
}

func handle(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/small":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	case r.URL.Path == "/upload" && (r.Method == "POST" || r.Method == "PUT"):
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		io.WriteString(w, fmt.Sprintf("%s %d", hex.EncodeToString(h.Sum(nil)), n))
	case r.URL.Path == "/download":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(pattern(n))
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, _ := strconv.Atoi(r.URL.Path[len("/status/"):])
		w.WriteHeader(code)
	default:
		http.Error(w, "not found", 404)
	}
}

func main() {
	var handler http.Handler = http.HandlerFunc(handle)
	if os.Args[1] == "h2c" {
		handler = h2c.NewHandler(handler, &http2.Server{})
	}
	fmt.Println("listening")
	if err := http.ListenAndServe("0.0.0.0:"+os.Args[2], handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
