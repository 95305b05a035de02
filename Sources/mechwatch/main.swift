print("mechwatch")
