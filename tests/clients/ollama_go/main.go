// ollama-go-client drives Ollama's own Go client (github.com/ollama/ollama/api, the package
// the `ollama` CLI is built on), unchanged, against a server, as the CLI uses it. Each
// command prints what the client decoded, as JSON, so the tests see the typed result.
//
//	ollama-go-client HOST KEY create-blob FILE        stream FILE with no length (chunked), as `ollama create` does; print its digest
//	ollama-go-client HOST KEY create NAME FILE DIGEST  create NAME from an uploaded blob
//	ollama-go-client HOST KEY create-modelfile NAME MODELFILE  what `ollama create NAME -f MODELFILE` does
//	ollama-go-client HOST KEY show NAME                api.ShowResponse
//	ollama-go-client HOST KEY list                     api.ListResponse
//	ollama-go-client HOST KEY embed NAME TEXT          api.EmbedResponse
//
// KEY goes in an Authorization: Bearer header through the http.Client given to
// api.NewClient, as a user would configure a client for a server that asks for a key.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/parser"
)

type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return http.DefaultTransport.RoundTrip(r)
}

func main() {
	if len(os.Args) < 4 {
		fail(fmt.Errorf("usage: ollama-go-client HOST KEY COMMAND [ARGS]"))
	}
	base, err := url.Parse(os.Args[1])
	if err != nil {
		fail(err)
	}
	client := api.NewClient(base, &http.Client{Transport: bearer{os.Args[2]}})
	ctx := context.Background()
	args := os.Args[4:]
	switch os.Args[3] {
	case "create-blob":
		digest, err := createBlob(ctx, client, args[0])
		if err != nil {
			fail(err)
		}
		emit(map[string]string{"digest": digest})
	case "create":
		var statuses []string
		err := client.Create(ctx, &api.CreateRequest{Model: args[0], Files: map[string]string{args[1]: args[2]}},
			func(p api.ProgressResponse) error { statuses = append(statuses, p.Status); return nil })
		if err != nil {
			fail(err)
		}
		emit(map[string]any{"statuses": statuses})
	case "create-modelfile":
		statuses, err := createFromModelfile(ctx, client, args[0], args[1])
		if err != nil {
			fail(err)
		}
		emit(map[string]any{"statuses": statuses})
	case "show":
		resp, err := client.Show(ctx, &api.ShowRequest{Model: args[0]})
		if err != nil {
			fail(err)
		}
		emit(resp)
	case "list":
		resp, err := client.List(ctx)
		if err != nil {
			fail(err)
		}
		emit(resp)
	case "embed":
		resp, err := client.Embed(ctx, &api.EmbedRequest{Model: args[0], Input: args[1]})
		if err != nil {
			fail(err)
		}
		emit(resp)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[3]))
	}
}

// createBlob is what cmd.createBlob in ollama does: hash the file, then stream it through
// an io.TeeReader, whose length net/http cannot know, so it goes out chunked.
func createBlob(ctx context.Context, client *api.Client, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	digest := fmt.Sprintf("sha256:%x", hash.Sum(nil))
	var sent int64
	counter := writerFunc(func(p []byte) (int, error) { sent += int64(len(p)); return len(p), nil })
	if err := client.CreateBlob(ctx, digest, io.TeeReader(f, counter)); err != nil {
		return "", err
	}
	return digest, nil
}

// createFromModelfile is cmd.CreateHandler's path in ollama: the Modelfile parsed by ollama's
// own parser, each local file it names (FROM, ADAPTER) uploaded as a blob, then the create
// with `files` and `adapters` keyed by the files' base names.
func createFromModelfile(ctx context.Context, client *api.Client, name, path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	modelfile, err := parser.ParseFile(f)
	if err != nil {
		return nil, err
	}
	req, err := modelfile.CreateRequest(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	upload := func(files map[string]string) (map[string]string, error) {
		if files == nil {
			return nil, nil
		}
		out := map[string]string{}
		for file, digest := range files {
			got, err := createBlob(ctx, client, file)
			if err != nil {
				return nil, err
			}
			if got != digest {
				return nil, fmt.Errorf("%s changed while it was read", file)
			}
			out[filepath.Base(file)] = digest
		}
		return out, nil
	}
	if req.Files, err = upload(req.Files); err != nil {
		return nil, err
	}
	if req.Adapters, err = upload(req.Adapters); err != nil {
		return nil, err
	}
	req.Model = name
	var statuses []string
	err = client.Create(ctx, req, func(p api.ProgressResponse) error { statuses = append(statuses, p.Status); return nil })
	return statuses, err
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

func emit(v any) {
	if err := json.NewEncoder(os.Stdout).Encode(v); err != nil {
		fail(err)
	}
}

// fail prints the client's error as JSON (with the HTTP status when the client has one)
// and exits 1, so a test can tell a refusal from a crash.
func fail(err error) {
	out := map[string]any{"error": err.Error()}
	switch e := err.(type) {
	case api.StatusError:
		out["status"] = e.StatusCode
	case api.AuthorizationError:
		out["status"] = e.StatusCode
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(1)
}
