// Package format reads, writes and verifies the .cimg file.
//
// A .cimg is a squashfs image at offset 0 followed by four sections, with
// no gap between them:
//
//	[0, P)          payload: squashfs, padded to 4 KiB
//	[P, P+T)        dm-verity hash tree over the payload (sha256, 4 KiB
//	                data and hash blocks, version 1 salting), byte for
//	                byte what `veritysetup format --no-superblock` writes
//	[.., +M)        manifest (TOML, at most MaxManifestSize bytes)
//	[.., +S)        signatures: "CSIG", count, then (key id, ed25519 sig),
//	                at most MaxSigSize bytes
//	[EOF-256, EOF)  footer: magic, version, every section's offset and
//	                length, verity root hash and salt, manifest sha256,
//	                and a sha256 of the footer itself
//
// Because sections are contiguous and the footer's checksum, the manifest
// hash and the verity root cover every byte, any change to the file is
// caught by Verify; the signatures sign the footer (and so the root hash
// and the manifest hash), not the file, so checking one costs microseconds
// and the payload can be checked lazily by the kernel's dm-verity.
//
// Hashing the payload (building or checking the tree) is this package's
// one heavy job: every core reads and hashes its own 1 MiB chunks, and on
// amd64 CPUs with the SHA extensions two blocks at a time
// (sha256x2_amd64.s), elsewhere one at a time with crypto/sha256.
//
// Reading never needs the squashfs parser. Every offset and length is
// checked against the file size before use and every failure is a
// *SectionError naming the section. This package imports nothing else of
// cimg's: it knows bytes, not manifests or mounts.
package format
