module cimg.dev/cimg

go 1.26.0

require (
	github.com/klauspost/compress v1.20.3
	github.com/pierrec/lz4/v4 v4.1.33
	github.com/ulikunitz/xz v0.5.15
)

require github.com/BurntSushi/toml v1.6.0
