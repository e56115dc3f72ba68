package imagecfg

import (
	"io"
	"os"
)

type ioReadCloser = io.ReadCloser

func openFile(path string) (io.ReadCloser, error) { return os.Open(path) }
