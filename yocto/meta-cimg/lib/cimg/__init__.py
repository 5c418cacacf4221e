# meta-cimg's Python helpers for its classes (conf/layer.conf: addpylib).
BBIMPORTS = ["provenance"]
