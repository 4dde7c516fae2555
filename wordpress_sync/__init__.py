"""WordPress sync: upserting posts with live values. Lands with issue 7."""
