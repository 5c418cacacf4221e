// Package squashfs writes squashfs 4.0 filesystem images.
//
// It implements the subset a read-only application image needs and the
// Linux kernel mounts: directories (with directory indexes for large
// listings), regular files (with tail packing into fragments, sparse blocks
// and whole-file de-duplication), symlinks and hardlinks, compressed with
// zstd, xz, gzip or lz4, with basic inodes where they suffice and extended
// ones where sizes, offsets or link counts demand them.
//
// It refuses what an application image should not carry: device nodes,
// fifos and sockets are rejected by Tree.Add, and extended attributes are
// never stored (the NO_XATTRS flag is set), so a tree read on an SELinux
// build host still builds into the same bytes as anywhere else. It writes
// no NFS export table and no lzo or lzma images.
//
// The output is a pure function of the tree and the Options: entries are
// sorted by name, data is laid out in that order, compression may run on
// every core but results are written in input order, and every timestamp
// comes from the caller. The image is padded to a multiple of 4 KiB so it
// can back a loop device and a dm-verity data device directly.
//
// The kernel's constraints shape the encoders: every zstd block is one
// single-segment frame (window = content size ≤ block size), every xz block
// is a complete .xz stream with a CRC32 check and a dictionary no larger
// than the block size, and lz4 blocks are raw LZ4 blocks announced by the
// mandatory compressor options.
//
// The filesystem is written in Go; the blocks are compressed by the
// reference C encoders when built with cgo (libzstd, bundled by
// github.com/DataDog/zstd) and the cimg_clibs tag (liblzma, libdeflate
// and liblz4, built by scripts/clibs.sh), so images are as small as
// mksquashfs's (gzip's smaller: libdeflate, not zlib, see
// gzip_libdeflate.go); otherwise by pure-Go encoders (the *_purego.go files).
// EncoderDescription names the encoder for the image's provenance.
package squashfs

const (
	magic          = 0x73717368
	superblockSize = 96
	metadataSize   = 8192
	// uncompressedBit marks a data or fragment block stored as is.
	uncompressedBit = 1 << 24
	// metaUncompressedBit marks a metadata block stored as is.
	metaUncompressedBit = 0x8000
	invalidFragment     = 0xFFFFFFFF
	invalidTable        = 0xFFFFFFFFFFFFFFFF
	maxDirEntriesPerHdr = 256
	maxNameLen          = 256

	MinBlockSize     = 4 << 10
	MaxBlockSize     = 1 << 20
	DefaultBlockSize = 128 << 10
)

// Inode types as stored in the inode table. Directory entries always carry
// the basic type, even for an extended inode.
const (
	typeDir      = 1
	typeFile     = 2
	typeSymlink  = 3
	typeExtDir   = 8
	typeExtFile  = 9
	typeExtSymln = 10
)

// Superblock flags.
const (
	flagNoXattrs    = 0x0200
	flagDuplicates  = 0x0040
	flagCompressOpt = 0x0400
)
