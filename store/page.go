package store

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"google.golang.org/protobuf/proto"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// Page sizes for list RPCs.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// PageSize applies the default and the maximum.
func PageSize(requested int32) int {
	switch {
	case requested <= 0:
		return DefaultPageSize
	case requested > MaxPageSize:
		return MaxPageSize
	}
	return int(requested)
}

// queryHash binds a page token to the filter and order it was issued for.
func queryHash(parts ...string) []byte {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return h[:8]
}

// encodePageToken makes the opaque token for the page after the cursor.
func encodePageToken(afterKey, afterID string, query []byte) string {
	b, _ := proto.Marshal(&avbv1.PageCursor{AfterKey: afterKey, AfterId: afterID, QueryHash: query})
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken reads a token; an empty token is the first page (nil).
func decodePageToken(token string, query []byte) (*avbv1.PageCursor, error) {
	if token == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, ErrInvalidPageToken
	}
	var c avbv1.PageCursor
	if err := proto.Unmarshal(b, &c); err != nil || string(c.GetQueryHash()) != string(query) || c.GetAfterId() == "" {
		return nil, ErrInvalidPageToken
	}
	return &c, nil
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case bool:
		if x {
			return "1"
		}
		return "0"
	case string:
		return x
	}
	return ""
}
