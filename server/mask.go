package server

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// applyMask copies the fields of src named by paths ("branding",
// "branding.primary_color") into dst. No paths copies everything.
func applyMask(dst, src proto.Message, paths []string) error {
	if len(paths) == 0 {
		proto.Reset(dst)
		proto.Merge(dst, src)
		return nil
	}
	for _, path := range paths {
		if err := copyPath(dst.ProtoReflect(), src.ProtoReflect(), strings.Split(path, ".")); err != nil {
			return fmt.Errorf("update_mask path %q: %w", path, err)
		}
	}
	return nil
}

func copyPath(dst, src protoreflect.Message, path []string) error {
	fd := dst.Descriptor().Fields().ByName(protoreflect.Name(path[0]))
	if fd == nil {
		return fmt.Errorf("no field %q in %s", path[0], dst.Descriptor().FullName())
	}
	if len(path) == 1 {
		if src.Has(fd) {
			dst.Set(fd, src.Get(fd))
		} else {
			dst.Clear(fd)
		}
		return nil
	}
	if fd.Message() == nil || fd.IsList() || fd.IsMap() {
		return fmt.Errorf("%q is not a message field", path[0])
	}
	return copyPath(dst.Mutable(fd).Message(), src.Get(fd).Message(), path[1:])
}
